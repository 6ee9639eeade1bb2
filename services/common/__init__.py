"""What at least two services share: hub API client, web base, config, database, scheduling."""
