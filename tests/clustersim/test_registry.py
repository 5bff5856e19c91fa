"""The registry, as the product reads it with boto3."""

from clustersim.registry import repository_uri


def test_the_repo_uri_looks_like_ecr(clustersim):
    assert clustersim.image_repo == "123456789012.dkr.ecr.us-east-1.amazonaws.com/gpu-dev"
    assert repository_uri("other") == "123456789012.dkr.ecr.us-east-1.amazonaws.com/other"


def test_a_push_moves_latest_and_tags_the_same_digest_immutably(clustersim, ecr):
    before = ecr.describe_images(repositoryName="gpu-dev", imageIds=[{"imageTag": "latest"}])
    old = before["imageDetails"][0]
    digest, tag = clustersim.push_image(size_gb=27, context_hash="1a2b3c4d")
    assert tag == "latest-1a2b3c4d"
    assert digest.startswith("sha256:")
    assert len(digest) == len("sha256:") + 64
    latest = ecr.describe_images(
        repositoryName="gpu-dev", registryId="123456789012", imageIds=[{"imageTag": "latest"}]
    )["imageDetails"][0]
    assert latest["imageDigest"] == digest
    assert sorted(latest["imageTags"]) == ["latest", "latest-1a2b3c4d"]
    assert latest["imageSizeInBytes"] == 27 * 10**9
    previous = ecr.describe_images(
        repositoryName="gpu-dev", imageIds=[{"imageDigest": old["imageDigest"]}]
    )["imageDetails"][0]
    assert previous["imageTags"] == [t for t in old["imageTags"] if t != "latest"]


def test_each_sim_starts_with_one_image(clustersim, ecr):
    images = ecr.describe_images(repositoryName="gpu-dev")["imageDetails"]
    assert len(images) == 1
    assert images[0]["imageTags"][0] == "latest"
