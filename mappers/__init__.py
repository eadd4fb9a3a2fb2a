"""Pure per-provider translators into the canonical retention taxonomy.

Mappers never do I/O: they take one stored delivery and return canonical actions, so
they can be replayed and tested without a database or network. The taxonomy and the
Stripe and Shopify mappers arrive with the taxonomy issue; the ingest path stores every
verified delivery whether or not a mapper knows its type yet.
"""
