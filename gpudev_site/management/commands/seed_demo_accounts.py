"""Create the two demo accounts the README names, and print their credentials."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

DEMO_ACCOUNTS = [
    # (username, password, staff operator?)
    ("alice", "alice-gpudev", False),
    ("olga", "olga-gpudev", True),
]


class Command(BaseCommand):
    help = "Create the demo developer (alice) and operator (olga); reset their passwords."

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        for username, password, staff in DEMO_ACCOUNTS:
            user, _ = User.objects.get_or_create(username=username)
            user.is_staff = user.is_superuser = staff
            user.set_password(password)
            user.save()
            role = "operator (staff)" if staff else "developer"
            self.stdout.write(f"  {role:17} {username} / {password}")
