"""WebSocket routes of every audience."""

from pool.routing import websocket_urlpatterns as ops_routes
from reservations.routing import websocket_urlpatterns as user_routes

websocket_urlpatterns = [*user_routes, *ops_routes]
