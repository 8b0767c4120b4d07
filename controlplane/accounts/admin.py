from django.contrib import admin

from controlplane.accounts.models import Membership, SignInAttempt, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "created_at")
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("team", "user", "role")
    list_filter = ("role", "team")


@admin.register(SignInAttempt)
class SignInAttemptAdmin(admin.ModelAdmin):
    """Deleting a username's failed attempts lifts its lockout."""

    list_display = ("at", "username", "address", "outcome")
    list_filter = ("outcome",)
    search_fields = ("username", "address")
    readonly_fields = ("at", "username", "address", "outcome")
