"""Delivery channels: e-mail over SMTP, SMS through an HTTP provider, and the ledger of
delivered tasks that keeps a redelivered or retried task from sending twice. Each attempt is
observed through ``observability.delivery``; failures are classified here (transient: retried
by the backend; anything else: failed at once)."""
