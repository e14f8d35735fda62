"""Flow-matching schedules, the UniPC teacher solver and samplers."""
