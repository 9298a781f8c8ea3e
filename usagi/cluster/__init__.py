"""Cluster mode: several Usagi nodes, one leader elected through etcd, replicated stores."""
