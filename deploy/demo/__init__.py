"""`opswarm demo`: real faults in real demo services, noticed by Prometheus, fired by Alertmanager through the
bridge, handled by the live swarm; a report of every incident and one line of figures at the end."""
