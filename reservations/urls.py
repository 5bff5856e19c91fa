from django.urls import path

from reservations import views

app_name = "reservations"

urlpatterns = [
    path("", views.home, name="home"),
    path("reserve/", views.reserve, name="reserve"),
    path("reserve/form/", views.reserve_form, name="reserve_form"),
    path("reservations/<uuid:pk>/extend/", views.extend, name="extend"),
    path("reservations/<uuid:pk>/cancel/", views.cancel, name="cancel"),
    path("profile/", views.profile, name="profile"),
    path("profile/keys/", views.add_key, name="add_key"),
    path("profile/keys/<int:pk>/delete/", views.delete_key, name="delete_key"),
]
