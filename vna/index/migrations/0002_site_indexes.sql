-- Tenant-restricted searches (Query.sites) filter on site and still want the
-- newest studies first.
CREATE INDEX studies_site ON studies (site, study_date);
CREATE INDEX slides_site ON slides (site, created_at);
