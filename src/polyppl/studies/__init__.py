"""Studies on top of any model: ``compare`` (do backends agree, did they converge, how
fast), ``repro`` (failures users hit, reproduced and fixed), ``bench`` (how cost grows with
the data)."""
