"""The usage ledger gets a kind (a step, or the run's warm-up) and bounds: device-seconds in
[0, 1e12], uniform-GRPO seconds in [0, 1e18]. Entries a run token booked before the bounds
(negative, NaN or infinite device-seconds) are zeroed first: they were never device time, and
a NaN in the ledger made the team's budget answer 500."""

from django.conf import settings
from django.db import migrations, models
from django.db.models import Q

USAGE_MAX_SECONDS = 1e12
USAGE_MAX_UNIFORM_SECONDS = 1e18


def zero_what_is_not_device_time(apps, schema_editor):
    UsageEntry = apps.get_model("budgets", "UsageEntry")
    UsageEntry.objects.exclude(Q(device_seconds__gte=0, device_seconds__lte=USAGE_MAX_SECONDS)).update(
        device_seconds=0.0)
    UsageEntry.objects.exclude(Q(uniform_device_seconds__gte=0,
                                 uniform_device_seconds__lte=USAGE_MAX_UNIFORM_SECONDS)).update(
        uniform_device_seconds=0.0)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0001_initial'),
        ('budgets', '0001_initial'),
        ('runs', '0004_telemetry_tables_move_to_telemetry'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='usageentry',
            name='one_usage_entry_per_step',
        ),
        migrations.AddField(
            model_name='usageentry',
            name='kind',
            field=models.CharField(choices=[('step', 'a step'), ('warmup', 'the warm-up')], db_default='step', default='step', max_length=8),
        ),
        migrations.AddConstraint(
            model_name='usageentry',
            constraint=models.UniqueConstraint(fields=('run', 'kind', 'step'), name='one_usage_entry_per_kind_and_step'),
        ),
        migrations.RunPython(zero_what_is_not_device_time, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='usageentry',
            constraint=models.CheckConstraint(condition=models.Q(('device_seconds__gte', 0), ('device_seconds__lte', 1000000000000.0)), name='usage_device_seconds_in_range'),
        ),
        migrations.AddConstraint(
            model_name='usageentry',
            constraint=models.CheckConstraint(condition=models.Q(('uniform_device_seconds__gte', 0), ('uniform_device_seconds__lte', 1e+18)), name='usage_uniform_seconds_in_range'),
        ),
    ]
