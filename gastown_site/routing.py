from django.urls import path

from events import consumers

websocket_urlpatterns = [
    path("ws/events/", consumers.EventConsumer.as_asgi()),
]
