from django.apps import AppConfig


class GpudevSiteConfig(AppConfig):
    name = "gpudev_site"
    verbose_name = "gpudev"
