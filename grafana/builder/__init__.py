"""The Grafana dashboards' content, built with grafana-foundation-sdk, for grafana/dashboards.py.

- ``common``: datasources, panel, variable and dashboard builders both dashboards share.
- ``background_tasks`` and ``http_service``: one module a dashboard, one function a row.

Queries use the recording rules of prometheus/rules/recording.yml where one exists. Panels
with exemplars query the raw histogram instead: exemplars are stored on the scraped series only,
never on recorded ones.

A package of its own next to dashboards.py, not inside grafana/dashboards/: that folder holds
the generated JSON that Grafana's provisioning mounts.
"""
