"""Recompile the rule set on any change (see services.bump_version)."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from . import services
from .models import AdminNickname, ChatMute, RateLimit, Rule


@receiver(post_save, sender=Rule)
@receiver(post_delete, sender=Rule)
@receiver(post_save, sender=RateLimit)
@receiver(post_delete, sender=RateLimit)
@receiver(post_save, sender=AdminNickname)
@receiver(post_delete, sender=AdminNickname)
@receiver(post_save, sender=ChatMute)
@receiver(post_delete, sender=ChatMute)
def rules_changed(sender, raw=False, **kwargs):
    if not raw:
        services.bump_version()
