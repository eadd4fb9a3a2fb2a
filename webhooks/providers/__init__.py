"""Providers: one package each (spec, verification and keying, settings, lookups).

The registry (webhooks.providers.registry) is the only list of them; the seam every
provider fills is webhooks.providers.base.ProviderSpec.
"""
