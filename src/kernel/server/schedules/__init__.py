"""Schedules: commands that run by a cron expression in a time zone (docs/schedules.md)."""
