"""What every layer may use: settings (settings.py), the error hierarchy the API maps to HTTP
(errors.py), client JWT verification (auth.py) and structured logging (logs.py)."""
