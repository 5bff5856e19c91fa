from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from gpudev_site import health, metrics

urlpatterns = [
    # Kubernetes probes; exempt from the https redirect (SECURE_REDIRECT_EXEMPT), no login.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("", include("reservations.urls")),
    path("ops/", include("pool.urls")),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
