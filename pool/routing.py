"""WebSocket routes for operators (the live ops dashboard)."""

from django.urls import path

from pool.consumers import OpsConsumer

websocket_urlpatterns = [path("ws/ops/", OpsConsumer.as_asgi())]
