from django.contrib import admin

from reservations.models import DomainMapping, Reservation, SshKey


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "user",
        "pool",
        "gpu_count",
        "status",
        "warm_claimed",
        "created_at",
        "expires_at",
        "stamped_at",
    ]
    list_filter = ["status", "warm_claimed", "pool"]
    readonly_fields = ["stamped_at", "warning", "expiry_warned"]
    list_select_related = ["user", "pool__gpu_type"]
    search_fields = ["id", "user__username", "pod_name"]


@admin.register(DomainMapping)
class DomainMappingAdmin(admin.ModelAdmin):
    list_display = ["name", "holder", "pod_name", "created_at", "expires_at", "released_at"]
    list_filter = ["holder"]
    search_fields = ["name", "pod_name"]
    raw_id_fields = ["reservation"]


@admin.register(SshKey)
class SshKeyAdmin(admin.ModelAdmin):
    list_display = ["user", "title", "fingerprint", "created_at"]
    search_fields = ["user__username", "fingerprint"]
