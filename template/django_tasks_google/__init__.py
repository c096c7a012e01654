"""Django's task framework on Google Cloud: Cloud Tasks, Cloud Run Jobs and Cloud Scheduler.

Vendored into this project by django-tasks-google-template. Edit it in place if you must;
`copier update` merges upstream changes with your edits.
"""
