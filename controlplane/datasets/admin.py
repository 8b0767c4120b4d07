from django.contrib import admin

from controlplane.datasets.models import Dataset, Prompt


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "team", "prompt_count", "created_at")
    list_filter = ("team",)


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("key", "dataset", "difficulty", "split")
    search_fields = ("key",)
    list_filter = ("dataset",)
