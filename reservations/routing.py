"""WebSocket routes for developers (their own reservations, live)."""

from django.urls import path

from reservations.consumers import MyReservationsConsumer

websocket_urlpatterns = [
    path("ws/me/", MyReservationsConsumer.as_asgi()),
]
