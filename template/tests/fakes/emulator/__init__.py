"""Google Cloud as it behaves, on top of the API fakes: Cloud Tasks dispatches and retries, Cloud
Run Jobs runs containers, Cloud Scheduler fires. Time is compressed by ``EmulatorClock``."""
