-- A claimed job or generation carries a lease: the time (unix ms) until which its worker is known
-- to be alive. The worker renews it while the run lasts; work whose lease ran out is claimed
-- again (counted against the poison bound). NULL: not running, or claimed before leases existed.
ALTER TABLE jobs ADD COLUMN lease_until INTEGER;
ALTER TABLE generations ADD COLUMN lease_until INTEGER;
