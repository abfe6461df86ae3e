-- Initial schema.  Portable SQL where cheap (PostgreSQL later): no AUTOINCREMENT,
-- no SQLite-only types; text columns hold normalized search keys, JSON columns
-- hold compact DICOM JSON for returning values "as stored".

CREATE TABLE patients (
    pk INTEGER PRIMARY KEY,
    patient_id TEXT NOT NULL,
    issuer TEXT NOT NULL DEFAULT '',          -- IssuerOfPatientID ('' when absent)
    name_a TEXT NOT NULL DEFAULT '',          -- casefolded PN component groups
    name_i TEXT NOT NULL DEFAULT '',
    name_p TEXT NOT NULL DEFAULT '',
    birth_date TEXT NOT NULL DEFAULT '',
    sex TEXT NOT NULL DEFAULT '',
    num_studies INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL DEFAULT 0,       -- stored_at of the instance the attributes came from
    attrs TEXT NOT NULL DEFAULT '{}'          -- patient-level DICOM JSON
);
CREATE UNIQUE INDEX patients_id ON patients (patient_id, issuer);
CREATE INDEX patients_name_a ON patients (name_a);
CREATE INDEX patients_name_i ON patients (name_i);
CREATE INDEX patients_name_p ON patients (name_p);
CREATE INDEX patients_birth ON patients (birth_date);

CREATE TABLE studies (
    pk INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL,
    patient_pk INTEGER NOT NULL REFERENCES patients (pk),
    study_date TEXT NOT NULL DEFAULT '',
    study_time TEXT NOT NULL DEFAULT '',      -- normalized HHMMSS.FFFFFF
    accession TEXT NOT NULL DEFAULT '',
    ref_a TEXT NOT NULL DEFAULT '',           -- ReferringPhysicianName, casefolded groups
    ref_i TEXT NOT NULL DEFAULT '',
    ref_p TEXT NOT NULL DEFAULT '',
    study_id TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    modalities TEXT NOT NULL DEFAULT '',      -- '\'-joined, sorted (ModalitiesInStudy)
    num_series INTEGER NOT NULL DEFAULT 0,    -- series with at least one current instance
    num_instances INTEGER NOT NULL DEFAULT 0, -- current instances
    site TEXT,
    updated_at REAL NOT NULL DEFAULT 0,
    attrs TEXT NOT NULL DEFAULT '{}'          -- study-level DICOM JSON
);
CREATE UNIQUE INDEX studies_uid ON studies (study_uid);
CREATE INDEX studies_patient ON studies (patient_pk);
CREATE INDEX studies_date ON studies (study_date, study_uid);
CREATE INDEX studies_accession ON studies (accession);
CREATE INDEX studies_ref_a ON studies (ref_a);
CREATE INDEX studies_study_id ON studies (study_id);
CREATE INDEX studies_description ON studies (description);

CREATE TABLE series (
    pk INTEGER PRIMARY KEY,
    series_uid TEXT NOT NULL,
    study_pk INTEGER NOT NULL REFERENCES studies (pk),
    modality TEXT NOT NULL DEFAULT '',
    series_number INTEGER,
    description TEXT NOT NULL DEFAULT '',
    series_date TEXT NOT NULL DEFAULT '',
    series_time TEXT NOT NULL DEFAULT '',
    pps_date TEXT NOT NULL DEFAULT '',        -- PerformedProcedureStepStartDate
    pps_time TEXT NOT NULL DEFAULT '',
    body_part TEXT NOT NULL DEFAULT '',
    institution TEXT NOT NULL DEFAULT '',
    num_instances INTEGER NOT NULL DEFAULT 0,
    site TEXT,
    updated_at REAL NOT NULL DEFAULT 0,
    attrs TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX series_uid ON series (series_uid);
CREATE INDEX series_study ON series (study_pk, series_number);
CREATE INDEX series_modality ON series (modality, study_pk);
CREATE INDEX series_date ON series (series_date);

CREATE TABLE instances (
    pk INTEGER PRIMARY KEY,
    sop_uid TEXT NOT NULL,
    identity TEXT NOT NULL,
    is_current INTEGER NOT NULL,
    series_pk INTEGER NOT NULL REFERENCES series (pk),
    study_pk INTEGER NOT NULL REFERENCES studies (pk),
    sop_class_uid TEXT NOT NULL DEFAULT '',
    instance_number INTEGER,
    num_rows INTEGER,
    num_columns INTEGER,
    bits_allocated INTEGER,
    number_of_frames INTEGER,
    content_date TEXT NOT NULL DEFAULT '',
    content_time TEXT NOT NULL DEFAULT '',
    acquisition_dt TEXT NOT NULL DEFAULT '',
    transfer_syntax TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    num_frames INTEGER NOT NULL,
    frames TEXT,                              -- JSON list of [[offset, length], ...] or NULL
    metadata TEXT NOT NULL,                   -- compact DICOM JSON of the dataset
    stored_at REAL NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    site TEXT
);
CREATE UNIQUE INDEX instances_version ON instances (sop_uid, identity);
CREATE UNIQUE INDEX instances_current ON instances (sop_uid) WHERE is_current = 1;
CREATE INDEX instances_series ON instances (series_pk, instance_number);
CREATE INDEX instances_study ON instances (study_pk);
CREATE INDEX instances_class ON instances (sop_class_uid);

-- One row per normalized name word, for fuzzy (prefix, accent- and case-blind)
-- person-name matching.  attr is the keyword; owner is the patients/studies pk.
CREATE TABLE name_tokens (
    attr TEXT NOT NULL,
    token TEXT NOT NULL,
    owner INTEGER NOT NULL,
    PRIMARY KEY (attr, token, owner)
);
CREATE INDEX name_tokens_owner ON name_tokens (attr, owner);

CREATE TABLE slides (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    width INTEGER NOT NULL DEFAULT 0,
    height INTEGER NOT NULL DEFAULT 0,
    levels INTEGER NOT NULL DEFAULT 0,
    tile_size INTEGER NOT NULL DEFAULT 0,
    mpp REAL,
    prefix TEXT NOT NULL DEFAULT '',
    build_id TEXT NOT NULL DEFAULT '',
    properties TEXT NOT NULL DEFAULT '{}',
    patient_id TEXT,
    patient_name TEXT,
    study_instance_uid TEXT,
    series_instance_uid TEXT,
    accession_number TEXT,
    specimen TEXT,
    created_at REAL NOT NULL DEFAULT 0,
    site TEXT
);
CREATE INDEX slides_created ON slides (created_at);
