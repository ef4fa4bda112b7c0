/** Moved to test/support/admission-reviews.ts (shared by unit, integration, chaos and bench). */
export * from '../../support/admission-reviews.ts';
