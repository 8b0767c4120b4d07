"""Datasets and their prompts, each prompt under its stable key."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Dataset(models.Model):
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    source_filename = models.CharField(max_length=255, blank=True)
    content_hash = models.CharField(max_length=64, help_text="sha256 of the uploaded file")
    prompt_count = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="dataset_name_unique_in_team")]

    def __str__(self) -> str:
        return f"{self.team.slug}/{self.name}"


class Prompt(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="prompts")
    key = models.CharField(max_length=255)
    prompt = models.JSONField(help_text="text, or a chat list of {role, content}")
    ground_truth = models.TextField()
    data_source = models.CharField(max_length=200, blank=True)
    index = models.BigIntegerField(default=-1)
    difficulty = models.CharField(max_length=64, blank=True)
    split = models.CharField(max_length=32, blank=True)
    extra_info = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dataset", "key"], name="prompt_key_unique_in_dataset")]

    def __str__(self) -> str:
        return self.key
