"""The real executor: what performs the decision core's effects on a real host."""
