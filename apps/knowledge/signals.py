"""Index invalidation and re-embedding on change (see services.bump_version)."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from . import services
from .models import CustomWord, Entry, Synonym


@receiver(post_save, sender=Entry)
def entry_saved(sender, instance, raw=False, **kwargs):
    if raw or services.signals_suppressed():
        return
    services.bump_version()
    if instance.embedding is None and instance.enabled:
        services.enqueue_embedding([instance.pk])


@receiver(post_delete, sender=Entry)
@receiver(post_save, sender=Synonym)
@receiver(post_delete, sender=Synonym)
@receiver(post_save, sender=CustomWord)
@receiver(post_delete, sender=CustomWord)
def dictionary_changed(sender, raw=False, **kwargs):
    if raw or services.signals_suppressed():
        return
    services.bump_version()
