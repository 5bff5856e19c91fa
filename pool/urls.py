from django.urls import path

from pool import views

app_name = "ops"

urlpatterns = [
    path("", views.pools, name="pools"),
    path("pools/<int:pool_id>/target/", views.pool_target, name="pool-target"),
    path("pools/<int:pool_id>/rotation/", views.pool_rotation, name="pool-rotation"),
    path("pods/", views.pods, name="pods"),
    path("pods/<str:name>/recycle/", views.pod_recycle, name="pod-recycle"),
    path("images/", views.images, name="images"),
    path("names/", views.names, name="names"),
    path("names/cleanup/", views.names_cleanup, name="names-cleanup"),
    path("audit/", views.audit, name="audit"),
]
