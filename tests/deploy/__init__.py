"""Static checks of the deploy side: compose, Dockerfiles, collector, Kibana objects, Kubernetes."""
