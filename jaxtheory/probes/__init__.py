"""Probes of trained networks, written for one run and mapped over a sweep."""

from jaxtheory.probes.batch import over_runs
