"""The simulated world: virtual time, clocks, network, hosts, domains, watchdogs, fence devices."""
