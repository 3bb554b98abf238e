from django.apps import AppConfig


class RCacheConfig(AppConfig):
    """Optional: add ``"rcache.django"`` to ``INSTALLED_APPS`` for ``manage.py rcache``,
    the ``{% load rcache %}`` template tags and the admin action."""

    name = "rcache.django"
    label = "rcache"
    verbose_name = "rcache"

    def ready(self) -> None:
        from django.core.signals import request_started

        from .admin import install_admin_action

        install_admin_action()
        # Admin registrations made after this app's ready() (autodiscover order) get it on the first request.
        request_started.connect(_install_once, dispatch_uid="rcache.django.admin")


def _install_once(**kwargs: object) -> None:
    from django.core.signals import request_started

    from .admin import install_admin_action

    install_admin_action()
    request_started.disconnect(dispatch_uid="rcache.django.admin")
