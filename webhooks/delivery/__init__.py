"""Delivery to Customer.io: operations, the Track API client, retries, the worker."""
