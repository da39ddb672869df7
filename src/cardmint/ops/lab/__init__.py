"""A three-host Patroni lab on this machine: network namespaces on a bridge of their own,
each running etcd, Patroni and PostgreSQL; links cut and healed to rehearse partitions."""
