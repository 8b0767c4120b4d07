"""UsageDay: the ledger summed per run and day, what the budget answer reads each step instead of
the period's entries. Filled from the ledger recorded before it (one grouped query)."""

import django.db.models.deletion
from django.db import migrations, models


def days_from_the_ledger(apps, schema_editor):
    from controlplane.budgets.services import usage_days_rebuild

    usage_days_rebuild(entry_model=apps.get_model("budgets", "UsageEntry"),
                       day_model=apps.get_model("budgets", "UsageDay"))


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0003_telemetry_retention'),
        ('budgets', '0002_usage_kinds_and_bounds'),
        ('runs', '0008_telemetry_retention'),
    ]

    operations = [
        migrations.CreateModel(
            name='UsageDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('device_seconds', models.FloatField()),
                ('run', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='runs.run')),
                ('team', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.team')),
            ],
            options={
                'indexes': [models.Index(fields=['team', 'day'], name='usage_day_team_day')],
                'constraints': [models.UniqueConstraint(fields=('run', 'day'), name='one_usage_day_per_run')],
            },
        ),
        migrations.RunPython(days_from_the_ledger, migrations.RunPython.noop),
    ]
