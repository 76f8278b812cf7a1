-- What an API key may do: `admin`, `operator` or `reader`. Keys made before roles existed
-- could do everything, so they stay `admin`.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
