from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "controlplane.budgets"
    label = "budgets"
