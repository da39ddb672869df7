"""The runbook's critical metrics and scaling triggers: one table of alert rules
(rules.py) evaluated by the built-in monitor (sample.py, alerts.py, loop.py in `cardmint
serve`) and exported for Prometheus (prometheus.py, promtests.py, grafana.py); what
/metrics scrapes (scrape.py); the operations dashboard (dashboard.py, history.py)."""
