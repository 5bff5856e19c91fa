from django.contrib import admin

from pool.models import AuditEvent, GpuType, ImageRelease, NodeRecord, PodRecord, Pool


@admin.register(GpuType)
class GpuTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "gpus_per_node", "is_mig", "node_label"]
    search_fields = ["name"]


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    list_display = ["__str__", "gpus_per_pod", "target", "max_age_hours", "rotation_paused"]
    list_filter = ["rotation_paused", "gpu_type"]
    list_select_related = ["gpu_type"]


@admin.register(ImageRelease)
class ImageReleaseAdmin(admin.ModelAdmin):
    list_display = ["repo", "tag", "short_digest", "immutable_ref", "first_seen_at", "is_current"]
    list_filter = ["is_current"]


@admin.register(PodRecord)
class PodRecordAdmin(admin.ModelAdmin):
    list_display = ["name", "pool", "kind", "state", "node_name", "short_digest", "created_at"]
    list_filter = ["state", "kind", "pool"]
    list_select_related = ["pool__gpu_type"]
    search_fields = ["name", "node_name"]
    raw_id_fields = ["reservation", "name_lease"]


@admin.register(NodeRecord)
class NodeRecordAdmin(admin.ModelAdmin):
    list_display = ["name", "gpu_type", "gpus_allocatable", "gpus_used", "ready"]
    list_filter = ["ready", "gpu_type"]
    search_fields = ["name"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor", "action", "pool", "pod_name", "reason"]
    list_filter = ["action", "actor"]
    search_fields = ["pod_name", "reason"]
    raw_id_fields = ["reservation"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
