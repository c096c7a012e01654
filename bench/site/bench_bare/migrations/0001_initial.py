from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []  # noqa: RUF012  (Django's migration class attributes)
    operations = [  # noqa: RUF012
        migrations.CreateModel(
            name="Hit",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("body", models.TextField()),
            ],
        ),
    ]
