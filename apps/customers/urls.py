from django.urls import path

from apps.customers import api

api_urlpatterns = [
    path("customers/export", api.CustomerExportView.as_view(), name="customers-export"),
]
