-- The demo schema: a users table with a unique email, and some rows.
CREATE TABLE IF NOT EXISTS users (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    email      text NOT NULL UNIQUE,
    team       text NOT NULL,
    score      numeric(12, 2) NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO users (id, name, email, team, score)
SELECT g, 'user ' || g, 'user' || g || '@example.com',
       (ARRAY['red', 'green', 'blue'])[1 + g % 3], g % 1000
FROM generate_series(1, 10000) g
ON CONFLICT DO NOTHING;
