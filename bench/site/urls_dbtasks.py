from bench_bare.views import insert
from django.urls import path

urlpatterns = [path("bare/", insert)]
