# The role groups exist from the start: an admin adds people to `viewer` or `operator`
# (rigs.permissions) without creating the groups by hand first.

from django.db import migrations

ROLE_GROUPS = ("viewer", "operator")


def groups_create(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLE_GROUPS:
        Group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("rigs", "0004_alter_agent_runtime_command"),
    ]

    operations = [migrations.RunPython(groups_create, migrations.RunPython.noop)]
