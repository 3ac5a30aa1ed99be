DROP TABLE dead_letters;
DROP TABLE inbox_ranking;
DROP TABLE inbox_notification;
DROP TABLE inbox_data_platform;
