"""createteam NAME --owner USER [--password PW]: a team, its first admin, and that user's API token."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from controlplane.accounts.services import password_problems, team_create
from controlplane.api.services import api_token_get_or_create


class Command(BaseCommand):
    help = ("Create a team (or reuse the one with the same slug) with USER as its admin, creating the user "
            "if needed. Prints the team's slug and the user's API token (Authorization: Token <key>).")

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="the team's display name; its slug is made from it")
        parser.add_argument("--owner", required=True, help="username of the team's first admin")
        parser.add_argument("--password", help="sets the owner's password (to sign in and to get a token); it "
                                               "must pass the password validators (12 characters or more, not "
                                               "common, not all digits, not like the username); left out, an "
                                               "existing user keeps theirs")

    def handle(self, *args, name: str, owner: str, password: str | None, **options) -> None:
        if not owner.strip():
            raise CommandError("--owner is empty: give the username of the team's first admin")
        if password is not None and not password:
            raise CommandError("--password is empty: give a password, or leave --password out")
        if password is not None and (problems := password_problems(password, username=owner)):
            raise CommandError(f"--password is refused: {' '.join(problems)} Choose another (a long passphrase "
                               f"works), or leave --password out to keep the user's current one.")
        try:
            with transaction.atomic():
                team = team_create(name=name, owner_username=owner, owner_password=password)
                membership = team.memberships.select_related("user").get(user__username=owner)
                token = api_token_get_or_create(user=membership.user)
        except ValueError as exc:
            raise CommandError(f"{exc}: choose another team name") from exc
        self.stdout.write(f"team: {team.slug}")
        self.stdout.write(f"user: {owner} (admin)")
        self.stdout.write(f"token: {token}")
