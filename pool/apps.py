from django.apps import AppConfig


class PoolConfig(AppConfig):
    name = "pool"
    verbose_name = "Warm pools"

    def ready(self) -> None:
        from pool import checks  # noqa: F401  (registers the system checks)
