"""Cards for the EHR and the reviewer's report, built once, worded from cards/."""
