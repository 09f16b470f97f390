"""The five agent processes: wiring only (consume, call logic, publish). Agents never import each other."""
