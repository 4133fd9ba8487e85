"""twoway: two-way customer sync between PostgreSQL and Stripe over Kafka."""
