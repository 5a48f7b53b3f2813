"""Insights: the business metrics of an application built on Outcrop, and the bill that goes with them."""
